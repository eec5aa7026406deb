"""perucast: forecasting for Peru's food supply chains (crop demand, anchoveta stock)."""

__version__ = "0.1.0"
