"""Conversion-only code: reading source layouts, the decoding policy that turns any source
image into the stored uint8 RGB pixels, and the options every format's writer takes.

Nothing here runs while training; the runtime readers live in ``pipelines/formats/``.
"""
