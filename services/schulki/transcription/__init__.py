"""The transcription service: recordings to text with faster-whisper."""
