"""mixbench: does a mixing strategy give a better model than the free mixes? (see ``__main__`` for the commands)."""
