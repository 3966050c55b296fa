"""What a user writes and how it becomes a prompt: prompt-format documents, prompt plans,
stories and chats with their library, character cards.
"""
