"""Inference off MONAI Label's event loop, so the server keeps answering while it infers.

MONAI Label 0.8.5's ``POST /infer/{model}`` is an ``async`` endpoint that runs the whole inference
synchronously, so while one runs its server process answers nothing else (``GET /info/``, Slicer's
status polling, included); ``MONAI_LABEL_INFER_CONCURRENCY`` only adds a thread pool that the event
loop then waits on. :func:`infer_in_worker_threads` serves the same endpoint from FastAPI's worker
threads instead (FastAPI runs a plain ``def`` endpoint there), each call in an event loop of its
own; the pool then bounds the inferences running at once while the event loop stays free.
"""

from __future__ import annotations

import asyncio
import inspect

from fastapi import APIRouter
from fastapi.routing import APIRoute

__all__ = ["infer_in_worker_threads"]


def infer_in_worker_threads(router: APIRouter) -> bool:
    """Re-register ``router``'s ``async`` POST routes as plain functions running them to completion.

    Each keeps its path, methods, name, summary and signature (FastAPI reads the request parameters
    from it). With FastAPI's included routers (0.16x, the version requirements.txt pins) a router
    changed after ``include_router`` serves the change.

    Returns:
        Whether a route was replaced (``False``: none is ``async``, e.g. already replaced).
    """
    replaced = False
    for route in list(router.routes):
        if isinstance(route, APIRoute) and "POST" in route.methods and inspect.iscoroutinefunction(route.endpoint):
            endpoint = _run_to_completion(route.endpoint)
            router.routes.remove(route)
            router.add_api_route(route.path.removeprefix(router.prefix), endpoint, methods=list(route.methods),
                                 name=route.name, summary=route.summary, response_class=route.response_class,
                                 include_in_schema=route.include_in_schema)
            replaced = True
    return replaced


def _run_to_completion(coroutine_function):
    def endpoint(*args, **kwargs):
        return asyncio.run(coroutine_function(*args, **kwargs))

    endpoint.__signature__ = inspect.signature(coroutine_function)
    endpoint.__name__ = coroutine_function.__name__
    return endpoint
