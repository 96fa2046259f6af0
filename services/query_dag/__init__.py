"""The DAG coordinator: plans queries and analytics jobs (libs/dag), runs their fragments on the
storage nodes (``fragment.proto``), merges and streams results (``query_dag.proto``)."""
