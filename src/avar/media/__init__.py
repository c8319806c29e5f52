"""Media in: decoding by timestamp and the built-in synthetic benchmark."""
