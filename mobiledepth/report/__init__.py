"""The report: Markdown / HTML / JSON / CSV and plots from the store (mobiledepth.store); the gate is mobiledepth.gate."""
