"""YARA rules (.yar, .yara): placeholder."""


def load_yara(text, path, official, options):
    return []
