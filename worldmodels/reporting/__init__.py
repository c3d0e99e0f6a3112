"""The report's parts: the page and its HTML helpers (``page``), the published anchors as data
(``anchors``), and the sections (``sections``). ``wm report`` (``worldmodels.stages.report``) puts
them together into ``report.html``."""
