"""mmsearch's command line: thin typer commands over the retrieval and indexer libraries."""
