"""The fishery's management rules, shared by the simulator and the harvest advice.

Kept apart from ``generator.py`` so that advice at serving time does not import the simulator.
"""

SPAWNING_RESERVE_T = 5.0e6  # biomass left in the sea to spawn
EXPLOITATION_RATE = 0.30  # largest share of the assessed biomass one season may take
JUVENILE_LIMIT = 0.10  # a season is cancelled when its survey finds more juveniles than this
