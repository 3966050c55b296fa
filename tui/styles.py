"""The app's stylesheet: one layout that works from 80x24 up."""

CSS = """
#body {
    height: 1fr;
}

#fields {
    width: 30;
    height: 1fr;
    border-right: vkey $foreground 30%;
    padding: 0 1 0 0;
}

#fields Label, #dialog Label {
    color: $text-muted;
    margin-top: 0;
}

#fields Input, #fields Checkbox {
    margin-bottom: 0;
}

.field-area {
    height: 4;
}

#editor {
    width: 1fr;
    height: 1fr;
    padding: 0 1;
}

#status {
    height: 1;
    background: $panel;
    color: $text;
    padding: 0 1;
}

#character {
    width: 26;
    height: 1fr;
    padding: 0 1;
    border-right: vkey $foreground 30%;
}

#conversation {
    width: 1fr;
}

#messages {
    height: 1fr;
}

.message {
    padding: 0 1 1 1;
}

#composer {
    height: auto;
    min-height: 1;
    max-height: 6;
    border-top: none;
}

/* Focus is always visible: the focused field is tinted, the editor and lists get a bar on the left. */
Input:focus, TextArea:focus, Checkbox:focus, Select:focus, OptionList:focus, ListView:focus {
    background-tint: $accent 25%;
}

#editor, #messages, #composer {
    border-left: blank;
}

#editor:focus, #messages:focus, #composer:focus {
    border-left: thick $accent;
    background-tint: $accent 0%;
}

ModalScreen {
    align: center middle;
}

#dialog {
    width: 90%;
    max-width: 100;
    height: 90%;
    border: round $accent;
    background: $surface;
    padding: 0 1;
}

#dialog.small {
    height: auto;
    max-height: 10;
}

#dialog #text {
    height: 1fr;
}

#entries {
    height: 1fr;
}

.hint {
    color: $text-muted;
}

.sampling .row {
    height: 1;
}

.sampling .name {
    width: 24;
}

.sampling Input, .sampling Select {
    width: 1fr;
}
"""
