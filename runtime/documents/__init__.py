"""What a user writes and how it becomes a prompt: prompt-format documents, prompt plans,
stories and chats with their library, character cards.
"""

# Formats registered in their own module (one registration each): imported here so that every front-end offers them.
from talesmith.runtime.documents import adventure as adventure  # noqa: E402
from talesmith.runtime.documents import instruct as instruct  # noqa: E402
