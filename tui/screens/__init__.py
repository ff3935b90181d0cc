"""Modal screens: dialogs, the conversation picker, the help screen."""
