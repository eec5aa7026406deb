"""perucast pipelines."""
