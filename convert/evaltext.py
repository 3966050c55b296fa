"""The evaluation text of the quantization quality report: public-domain prose, English and Japanese.

English: the opening of Lewis Carroll's "Alice's Adventures in Wonderland" (1865). Japanese: the
opening of Natsume Soseki's 『吾輩は猫である』 (1905). Both are in the public domain.
"""

from __future__ import annotations

from pathlib import Path

from talesmith.runtime.errors import ConversionError

ENGLISH = """Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do: \
once or twice she had peeped into the book her sister was reading, but it had no pictures or conversations in it, \
"and what is the use of a book," thought Alice "without pictures or conversations?"

So she was considering in her own mind (as well as she could, for the hot day made her feel very sleepy and \
stupid), whether the pleasure of making a daisy-chain would be worth the trouble of getting up and picking the \
daisies, when suddenly a White Rabbit with pink eyes ran close by her.

There was nothing so very remarkable in that; nor did Alice think it so very much out of the way to hear the \
Rabbit say to itself, "Oh dear! Oh dear! I shall be late!" (when she thought it over afterwards, it occurred to \
her that she ought to have wondered at this, but at the time it all seemed quite natural); but when the Rabbit \
actually took a watch out of its waistcoat-pocket, and looked at it, and then hurried on, Alice started to her \
feet, for it flashed across her mind that she had never before seen a rabbit with either a waistcoat-pocket, or \
a watch to take out of it, and burning with curiosity, she ran across the field after it, and fortunately was \
just in time to see it pop down a large rabbit-hole under the hedge.

In another moment down went Alice after it, never once considering how in the world she was to get out again.
"""

JAPANESE = """吾輩は猫である。名前はまだ無い。
どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所でニャーニャー泣いていた事だけは記憶している。\
吾輩はここで始めて人間というものを見た。しかもあとで聞くとそれは書生という人間中で一番獰悪な種族であったそうだ。\
この書生というのは時々我々を捕えて煮て食うという話である。しかしその当時は何という考もなかったから別段恐しいとも思わなかった。\
ただ彼の掌に載せられてスーと持ち上げられた時何だかフワフワした感じがあったばかりである。
"""

TEXT = ENGLISH + "\n" + JAPANESE


def eval_text(path: Path | None) -> tuple[str, str]:
    """The quality report's evaluation text (this module's, or a file's) and how the lock names it."""
    if path is None:
        return TEXT, "bundled"
    try:
        return path.read_text(encoding="utf-8"), str(path.resolve())
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"--eval-text {path} could not be read ({e}); pass a UTF-8 text file") from None
