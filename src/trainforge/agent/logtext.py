"""One line of the training process's output as SageMaker's CloudWatch log event shows it.

The text of a SageMaker training log event is the container's output line as rsyslog's parser
leaves it (the ``#`` + octal escapes below are rsyslog's, with its default settings; SageMaker's
own metric regexes and the logs it prints show them — sources below). The rule, for the bytes of
one line (split at ``\\n``, the ``\\n`` not included):

1. One NUL at the very end is dropped.
2. Every byte below 0x20 becomes ``#`` and its value in three octal digits: a tab ``#011``, a
   carriage return ``#015`` (a ``\\r\\n`` line ends in ``#015``; a progress bar redrawn with
   ``\\r`` is one line of ``#015``-separated frames), ESC ``#033`` (colour codes: ``#033[0m``),
   BEL ``#007``, NUL ``#000``.
3. Nothing else is escaped: DEL (0x7F) and every byte from 0x80 stay as they are, so UTF-8 text
   (a non-ASCII word, tqdm's block characters) arrives unchanged.
4. The bytes are read as UTF-8 (a CloudWatch event is Unicode text; PutLogEvents is JSON): a byte
   sequence that is not UTF-8 becomes U+FFFD, one for each maximal invalid subsequence (Python's
   ``errors="replace"``, the Unicode Standard's recommended practice; a lone invalid byte is one
   U+FFFD under every convention).
5. A line that is empty after this is no event: a CloudWatch event's message is at least one
   character long (InputLogEvent.message, minimum length 1).

Sources:

- rsyslog's defaults (those SageMaker's logs show): ``parser.escapeControlCharactersOnReceive``
  on ("all control-characters are converted to a 3-digit octal number and be prefixed with the
  ``$ControlCharacterEscapePrefix`` character", rsyslog docs,
  configuration/input_directives/rsconf1_escapecontrolcharactersonreceive),
  ``parser.escapeControlCharacterTab`` on (a tab is escaped too), prefix ``#`` (the default of
  ``parser.controlCharacterEscapePrefix``), ``parser.escapeControlCharactersCStyle`` off,
  ``parser.escape8BitCharactersOnReceive`` off (rsconf1_escape8bitcharsonreceive: default off).
  What counts as a control character is rsyslog's code, runtime/parser.c ``SanitizeMsg``: a byte
  ``< 32`` (not ``iscntrl``, so DEL is kept), a NUL at the very end dropped, a NUL inside
  escaped whatever the setting.
- SageMaker's own metric regexes, which match that text: the built-in XGBoost container's
  ``.*\\[[0-9]+\\].*#011validation-{metric}:(\\S+)`` (aws/sagemaker-xgboost-container,
  src/sagemaker_xgboost_container/algorithm_mode/metrics.py; XGBoost prints
  ``[0]\\ttrain-rmse:...``), and the XGBoost logs printed by SageMaker example notebooks
  (``[0]#011train-rmse:18.9694#011validation-rmse:20.9535``).
- A SageMaker training log printed by a Hugging Face estimator's ``fit()`` in a notebook
  (transformers' Trainer, 2020): tqdm bars as ``#015  0%|          | 0/345 [00:00<?, ?it/s]#015  0%|  ...`` with the bar's
  UTF-8 block characters unescaped.

Not modelled: the agent's own line-length limit (a line longer than ``runner.MAX_LINE_BYTES`` is
sent in pieces, each rendered alone). Point 4 for truncated multi-byte sequences (one U+FFFD
here, one per byte under Go's decoder) could not be checked against SageMaker itself.
"""

from __future__ import annotations

_ESCAPES = {code: f"#{code:03o}" for code in range(0x20)}


def render(raw: bytes) -> str:
    """The event text of one line of output (without its ``\\n``); ``""`` when there is no event."""
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    # Escaping the characters below U+0020 after decoding is the same as escaping the bytes below
    # 0x20 before it: those bytes are never part of a multi-byte sequence, and the decoder never
    # takes one into an invalid subsequence.
    return raw.decode("utf-8", "replace").translate(_ESCAPES)
