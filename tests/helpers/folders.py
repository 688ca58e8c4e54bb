"""A folder of someone's own files, and whether it is still exactly as it was."""


def user_folder(path):
    """A folder of someone's files: what --overwrite must never delete. Returns {relative name: bytes}."""
    files = {"photo.jpg": b"\xff\xd8 not really", "notes/todo.txt": b"buy milk", "config.yaml": b"camera: nikon\n"}
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return files


def unchanged(path, files):
    """Whether `path` holds exactly `files` ({relative name: bytes}), no file more or less."""
    return {name: (path / name).read_bytes() for name in files} == files and sorted(
        str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()
    ) == sorted(files)
