"""Kibana saved objects on disk (``kibana_dashboards/*.ndjson``) and over Kibana's saved
objects API: ``install`` (``_import?overwrite=true``) and ``export`` (``_export``).

The files are the deliverable users import; ``build`` regenerates them from ``panels`` and
``export`` writes back what a Kibana holds (after someone edited a dashboard there), with
volatile fields removed so that a re-export without changes is not a diff.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from recommender.dashboard import kibana_objects
from recommender.dashboard.panels import DASHBOARDS
from recommender.errors import BackendUnavailable, ExitStatus, RecommenderError

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "kibana_dashboards"
VOLATILE = ("updated_at", "created_at", "version", "namespaces", "created_by", "updated_by",
            "originId")
TYPE_ORDER = {"index-pattern": 0, "search": 1, "lens": 2, "visualization": 2, "dashboard": 3}


class KibanaError(RecommenderError):
    """Kibana answered, but not with success: the message says what it objected to."""

    exit_status = ExitStatus.ERROR
    http_status = 502


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    """Objects of one file; a line that is not JSON names the file and line."""
    objects = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            objects.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise KibanaError(f"{path}, line {number}: not JSON ({exc.msg})") from None
    return objects


def load_dir(directory: Path = DEFAULT_DIR) -> dict[str, list[dict[str, Any]]]:
    """``{file stem: objects}`` of every ``*.ndjson`` file in ``directory``."""
    files = sorted(directory.glob("*.ndjson"))
    if not files:
        raise KibanaError(f"no *.ndjson files in {directory}")
    return {f.stem: read_ndjson(f) for f in files}


def to_ndjson(objects: Iterable[dict[str, Any]]) -> str:
    """One object per line, keys sorted: stable files, reviewable diffs."""
    return "".join(json.dumps(o, sort_keys=True, ensure_ascii=False) + "\n" for o in objects)


def build(directory: Path = DEFAULT_DIR) -> list[Path]:
    """Write ``<dashboard>.ndjson`` for every dashboard from the panel definitions."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, objects in kibana_objects.all_objects().items():
        path = directory / f"{stem}.ndjson"
        path.write_text(to_ndjson(sorted(objects, key=_sort_key)))
        written.append(path)
    return written


def _client(kibana_url: str, api_key: str | None, timeout_s: float) -> httpx.Client:
    headers = {"kbn-xsrf": "true"}
    if api_key:
        headers["Authorization"] = f"ApiKey {api_key}"
    return httpx.Client(base_url=kibana_url.rstrip("/"), headers=headers, timeout=timeout_s)


def _post(client: httpx.Client, path: str, **kwargs: Any) -> httpx.Response:
    try:
        return client.post(path, **kwargs)
    except httpx.HTTPError as exc:
        raise BackendUnavailable(f"Kibana at {client.base_url} did not answer "
                                 f"({type(exc).__name__}: {exc}); is it running?") from exc


def _refused(what: str, response: httpx.Response) -> KibanaError:
    try:
        body = response.json()
        detail = body.get("message") or body.get("error") or body
    except ValueError:
        detail = response.text[:300] or response.reason_phrase
    return KibanaError(f"Kibana answered {response.status_code} to {what}: {detail}")


def install(kibana_url: str, files: list[Path], api_key: str | None = None,
            timeout_s: float = 60.0) -> dict[str, Any]:
    """Import the files in one request (``overwrite=true``: re-running updates in place).

    Returns Kibana's answer; raises ``KibanaError`` listing each object Kibana refused.
    """
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in files:
        for obj in read_ndjson(path):
            objects[(obj["type"], obj["id"])] = obj  # files share their data views
    payload = to_ndjson(sorted(objects.values(), key=_sort_key)).encode()
    with _client(kibana_url, api_key, timeout_s) as client:
        response = _post(client, "/api/saved_objects/_import", params={"overwrite": "true"},
                         files={"file": ("recommender.ndjson", payload,
                                         "application/ndjson")})
    if response.status_code != 200:
        raise _refused("the saved objects import", response)
    try:
        result = response.json()
    except ValueError:
        raise _refused("the saved objects import", response) from None
    if not result.get("success"):
        problems = "; ".join(
            f"{e.get('type')} {e.get('id')}: {(e.get('error') or {}).get('type', 'error')}"
            f" {json.dumps((e.get('error') or {}).get('references', ''))}"
            for e in result.get("errors", []))
        raise KibanaError(f"Kibana imported {result.get('successCount', 0)} of "
                          f"{len(objects)} objects; refused: {problems or result}")
    return result


def export(kibana_url: str, directory: Path = DEFAULT_DIR, api_key: str | None = None,
           timeout_s: float = 60.0) -> list[Path]:
    """Write each dashboard, with everything it references, to ``<dashboard>.ndjson``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    with _client(kibana_url, api_key, timeout_s) as client:
        for board in DASHBOARDS:
            oid = kibana_objects.dashboard_id(board)
            response = _post(client, "/api/saved_objects/_export", json={
                "objects": [{"type": "dashboard", "id": oid}],
                "includeReferencesDeep": True, "excludeExportDetails": True})
            if response.status_code != 200:
                raise _refused(f"the export of dashboard {oid}", response)
            objects = [_clean(json.loads(line)) for line in response.text.splitlines()
                       if line.strip()]
            objects = [o for o in objects if "exportedCount" not in o]
            path = directory / f"{board.id}.ndjson"
            path.write_text(to_ndjson(sorted(objects, key=_sort_key)))
            written.append(path)
    return written


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in VOLATILE}


def _sort_key(obj: dict[str, Any]) -> tuple[int, str]:
    return TYPE_ORDER.get(obj.get("type", ""), 2), obj.get("id", "")
