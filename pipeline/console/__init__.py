"""What every command shares on the terminal: one-line errors and exit statuses (`cli`), progress lines (`progress`)."""
