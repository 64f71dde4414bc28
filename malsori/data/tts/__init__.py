"""Speech synthesis engines behind one interface (engine.py): eSpeak NG built in, Kokoro-82M and Piper as extras."""
