"""``recommender serve`` pointed at private Elasticsearch names: the same app factory and the
same uvicorn server, only with ``IndexNames`` for the benchmark's predictions and movie-vector
aliases (``recommender serve`` has no option for them yet)::

    RECOMMENDER_...=... python -m bench.api_app --port 8123 \\
        --predictions bench-serve-x-predictions \\
        --latest-predictions bench-serve-x-latest-predictions \\
        --movie-vectors bench-serve-x-movie-vectors
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from recommender.serve.backends import IndexNames
    from recommender.serve.main import create_app
    from recommender.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m bench.api_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--predictions", required=True, help="predictions alias to read")
    parser.add_argument("--latest-predictions", required=True,
                        help="latest-predictions index to read")
    parser.add_argument("--movie-vectors", required=True, help="movie-vectors alias to read")
    parser.add_argument("--log-level", default="info", help="as `recommender serve`")
    args = parser.parse_args(argv)
    app = create_app(get_settings(), indices=IndexNames(
        predictions=args.predictions, latest_predictions=args.latest_predictions,
        movie_vectors=args.movie_vectors))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
