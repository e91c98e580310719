"""The live view: history rows fanned out to event streams (SSE) in each API process."""
