"""The large-language-model lessons at small scale: prompted tasks and in-context learning (`taskfile`, `prompts`,
`scoring`, `icl`), tasks built offline (`builders`), adapters on a frozen GPT (`soft_prompt`, `lora`, `adapters`)
and decoder-only speech recognition (`speech_prefix`)."""
