@testable import Calibration

/// Named histograms as a RESULT payload lays them out (u32 name length, name, histogram coding).
func payload(_ tensors: [NamedHistogram]) -> [UInt8] {
    var w = ByteWriter()
    for t in tensors {
        w.writeString(t.name)
        t.histogram.encode(into: &w)
    }
    return w.bytes
}

