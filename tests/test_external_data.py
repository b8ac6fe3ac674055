"""faaq_onnx.external_data: views into one shared map per data file, offsets, byte counts, and
unmapping only what nothing views."""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from faaq_onnx import external_data as ed


def saved(tmp_path):
    a = np.arange(100, dtype=np.float32).reshape(20, 5)
    b = np.arange(50, dtype=np.int64) * 7
    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [20, 5])],
        [
            numpy_helper.from_array(a, "a"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(np.float32([1.5]), "small"),
        ],
    )
    m = helper.make_model(graph)
    onnx.save_model(
        m,
        str(tmp_path / "m.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="m.data",
        size_threshold=200,  # a and b go out (400 bytes each), small stays
    )
    header = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    for t in header.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = str(tmp_path / e.value)
    return header, a, b


def test_views_of_external_tensors(tmp_path):
    header, a, b = saved(tmp_path)
    assert [ed.is_external(t) for t in header.graph.initializer] == [True, True, False]
    names, arrays = ed.external_initializers(header)
    assert names == ["a", "b"]
    np.testing.assert_array_equal(arrays[0], a)
    np.testing.assert_array_equal(arrays[1], b)  # at its offset in the shared file
    assert arrays[1].dtype == np.int64 and not arrays[0].flags.writeable
    assert ed.external_bytes(header) == a.nbytes + b.nbytes
    assert ed.external_bytes(onnx.ModelProto()) == 0
    del arrays
    ed.release()


def test_view_reads_any_part_of_a_file(tmp_path):
    data = np.arange(10, dtype=np.int16)
    (tmp_path / "raw.bin").write_bytes(data.tobytes())
    v = ed.view(str(tmp_path / "raw.bin"), 4, np.int16, (2, 3))
    np.testing.assert_array_equal(v, data[2:8].reshape(2, 3))
    s = ed.view(str(tmp_path / "raw.bin"), 18, np.int16, ())
    assert s.shape == () and int(s) == 9
    first = ed.view(str(tmp_path / "raw.bin"), None, np.int16, (1,))
    assert int(first[0]) == 0
    del v, s, first
    ed.release()


def test_one_map_per_file_and_release_keeps_what_is_viewed(tmp_path):
    ed.release()
    (tmp_path / "f.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    (tmp_path / "g.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    v1 = ed.view(str(tmp_path / "f.bin"), 0, np.float32, (4,))
    v2 = ed.view(str(tmp_path / "." / "f.bin"), 4, np.float32, (2,))
    w = ed.view(str(tmp_path / "g.bin"), 0, np.float32, (4,))
    assert len([p for p in ed._maps if p.startswith(str(tmp_path))]) == 2  # one map per real path
    del w
    assert ed.release() == 1  # g's map goes; f's is still viewed
    assert [p for p in ed._maps if p.startswith(str(tmp_path))] == [str(tmp_path / "f.bin")]
    ed.drop_pages(str(tmp_path / "f.bin"), 0, 16)  # advice only: the views still read
    ed.drop_pages(str(tmp_path / "nothing.bin"), 0, 16)
    ed.drop_pages(str(tmp_path / "f.bin"), 0, 0)
    np.testing.assert_array_equal(v2, [1.0, 2.0])
    del v1, v2
    assert ed.release() == 1 and not [p for p in ed._maps if p.startswith(str(tmp_path))]


def test_drop_pages_advises_the_pages_under_the_bytes_asked(monkeypatch):
    """madvise(DONTNEED) from the page holding `offset` to offset + length (clipped to the map);
    nothing for an unmapped file or no bytes, one byte is enough."""
    import mmap

    calls = []

    class FakeMap:
        def __len__(self):
            return 10 * mmap.PAGESIZE

        def madvise(self, *args):
            calls.append(args)

    path = os.path.realpath("/tmp/faaq-fake-data.bin")
    monkeypatch.setitem(ed._maps, path, FakeMap())
    page = mmap.PAGESIZE
    ed.drop_pages(path, page + 10, 2 * page)
    assert calls == [(mmap.MADV_DONTNEED, page, 2 * page + 10)]
    ed.drop_pages(path, 3 * page + 5, 1)
    assert calls[-1] == (mmap.MADV_DONTNEED, 3 * page, 6)
    ed.drop_pages(path, 9 * page, 5 * page)  # past the end of the map: clipped to it
    assert calls[-1] == (mmap.MADV_DONTNEED, 9 * page, page)
    n = len(calls)
    ed.drop_pages(path, page, 0)
    ed.drop_pages("/tmp/faaq-not-mapped.bin", page, page)
    assert len(calls) == n
