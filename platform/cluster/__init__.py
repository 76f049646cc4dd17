"""Running on a Ray cluster: connecting with the token (``connect``), submitting a job
through the Ray Jobs API (``submit``, ``jobs_api``), and the metrics a search exports
to Prometheus (``metrics``). See docs/cluster.md."""
