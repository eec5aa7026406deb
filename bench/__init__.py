"""perucast bench."""
