"""``dashboards install`` / ``export`` over HTTP: the request Kibana's saved objects API
expects (multipart ``file``, ``kbn-xsrf``, ``overwrite=true``) and a clear error for every
answer that is not a success.

Kibana cannot run on this machine (docker-compose only), so these tests talk to a small real
HTTP server that answers with the documented response shapes; the real import is exercised
with docker-compose (see kibana_dashboards/README.md).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from recommender.dashboard import kibana
from recommender.errors import BackendUnavailable


class FakeKibana(BaseHTTPRequestHandler):
    mode = "ok"
    requests: list[dict] = []  # noqa: RUF012 - shared by design, reset per test

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        FakeKibana.requests.append({"path": self.path, "headers": dict(self.headers),
                                    "body": body})
        if self.path.startswith("/api/saved_objects/_export"):
            wanted = json.loads(body)["objects"][0]["id"]
            lines = [o for objs in kibana.load_dir().values() for o in objs]
            lines = [{**o, "updated_at": "2025-01-01T00:00:00Z", "version": "WzEsMV0="}
                     for o in lines if o["type"] != "dashboard" or o["id"] == wanted]
            text = "".join(json.dumps(o) + "\n" for o in lines)
            self._answer(200, text + json.dumps({"exportedCount": len(lines)}) + "\n")
        elif self.mode == "ok":
            self._answer(200, json.dumps({"success": True, "successCount": 19}))
        elif self.mode == "partial":
            self._answer(200, json.dumps({"success": False, "successCount": 18, "errors": [
                {"id": "recommender-genre-share", "type": "lens",
                 "error": {"type": "missing_references",
                           "references": [{"type": "index-pattern", "id": "x"}]}}]}))
        elif self.mode == "forbidden":
            self._answer(403, json.dumps({"statusCode": 403, "error": "Forbidden",
                                          "message": "unable to bulk_create index-pattern"}))
        else:
            self._answer(502, "<html>Bad Gateway</html>")

    def _answer(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def kibana_url() -> Iterator[str]:
    FakeKibana.requests = []
    FakeKibana.mode = "ok"
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKibana)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_install_posts_every_object_once_as_multipart(kibana_url):
    files = sorted(kibana.DEFAULT_DIR.glob("*.ndjson"))
    result = kibana.install(kibana_url, files)
    assert result["success"] is True
    (req,) = FakeKibana.requests
    assert req["path"] == "/api/saved_objects/_import?overwrite=true"
    assert req["headers"]["kbn-xsrf"] == "true"
    assert req["headers"]["Content-Type"].startswith("multipart/form-data; boundary=")
    body = req["body"].decode()
    assert 'name="file"; filename="recommender.ndjson"' in body
    sent = [json.loads(line) for line in body.splitlines() if line.startswith("{")]
    unique = {(o["type"], o["id"]) for objs in kibana.load_dir().values() for o in objs}
    assert len(sent) == len(unique)  # data views shared by files are sent once
    assert [o["type"] for o in sent].index("dashboard") > [o["type"] for o in sent].index(
        "index-pattern")


@pytest.mark.parametrize("mode, message", [
    ("partial", "imported 18 of"), ("forbidden", "Kibana answered 403"),
    ("gateway", "Kibana answered 502")])
def test_install_reports_what_kibana_refused(kibana_url, mode, message):
    FakeKibana.mode = mode
    with pytest.raises(kibana.KibanaError, match=message) as err:
        kibana.install(kibana_url, sorted(kibana.DEFAULT_DIR.glob("*.ndjson")))
    if mode == "partial":
        assert "recommender-genre-share" in str(err.value)
        assert "missing_references" in str(err.value)


def test_install_without_kibana_is_unavailable():
    with pytest.raises(BackendUnavailable, match="did not answer"):
        kibana.install("http://127.0.0.1:9", sorted(kibana.DEFAULT_DIR.glob("*.ndjson")),
                       timeout_s=2)


def test_export_writes_each_dashboard_without_volatile_fields(kibana_url, tmp_path):
    paths = kibana.export(kibana_url, tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        p.name for p in kibana.DEFAULT_DIR.glob("*.ndjson"))
    for path in paths:
        objects = kibana.read_ndjson(path)
        assert next(o for o in objects if o["type"] == "dashboard")["id"].endswith(path.stem)
        assert all("updated_at" not in o and "version" not in o for o in objects)
        assert objects[0]["type"] == "index-pattern"  # dependencies first
    assert all(r["headers"]["kbn-xsrf"] == "true" for r in FakeKibana.requests)
