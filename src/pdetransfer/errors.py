"""The one exception type the command line turns into a one-sentence message.

Anything a user can get wrong (arguments, missing or corrupt files, mismatched checkpoints) is
raised as :class:`UserError` with a message that names the culprit, so that users never have to
read a traceback from deep inside h5py or torch to learn what they did wrong.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one clear sentence and exit status 2."""
