"""One API router per studio page."""
