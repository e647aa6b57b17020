"""Executors beyond the standard library's, each behind an optional extra.

Nothing here is imported by ``import event_pipeline``; import the submodule you need, for instance
``from event_pipeline.executors.dask import DaskExecutor`` (extra ``dask``:
``pip install -e ".[dask]"`` from a clone).
"""
