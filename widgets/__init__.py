"""Qt views of NL Studio (imported as ``nlstudio.widgets``). Widgets import the core, never
the other way round."""
