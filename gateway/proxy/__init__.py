"""The upstream side of the wire: a lean pooled HTTP/1.1 client and the header rules."""
