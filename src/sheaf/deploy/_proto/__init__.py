"""Generated protobuf messages of sheaf's wire protocol (``federation.proto``, version 1).

Regenerate with ``python scripts/gen_proto.py``; never edit the generated files by hand.
"""
