"""The generation benchmark: its decode loop and perplexity on a tiny model-builder graph."""
