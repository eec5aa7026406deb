"""perucast serving."""
