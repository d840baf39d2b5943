"""Images in and out: reading any file as sRGB uint8 RGB, writing 8- and 16-bit outputs with an
sRGB profile atomically (`images`, `icc`, `files`), and colour preservation (`color`)."""
