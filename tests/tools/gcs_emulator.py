"""Starts gcp-storage-emulator (same arguments), adding the generation headers real GCS sends.

Run with the emulator venv's python. GCS answers every media download with ``x-goog-generation``;
the emulator omits it, and tensorstore's OCDBT (Orbax's array format) needs it to commit again.
"""

import sys

from gcp_storage_emulator.handlers import objects

_download = objects.download


def download(request, response, storage, *args, **kwargs):
    _download(request, response, storage, *args, **kwargs)
    if response.status.value in (200, 206):
        resource = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        response["x-goog-generation"] = resource["generation"]
        response["x-goog-metageneration"] = resource["metageneration"]


# The routes are built when the server module is imported: patch first.
objects.download = download

from gcp_storage_emulator.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
