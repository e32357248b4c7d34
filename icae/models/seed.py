"""Temporary: the earlier name of :mod:`icae.models.original` (the data loaders move to the layout objects next)."""

from icae.models.original import ASSISTANT_MARKER, CONTENT, ChatFrame, chat_frame  # noqa: F401
