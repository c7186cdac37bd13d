using TorchSharp;
using static TorchSharp.torch;

namespace Workbook;

/// <summary>TorchSharp's <c>a + b</c> is <c>a.add(b, alpha)</c> with alpha an implicit Scalar 1: once its handle is
/// read nothing holds it, and a GC on another thread (seeds train as threads) may finalize it while the native call
/// still reads it ("Expected false to be true" in toFloat; seen once with 5 seeds in parallel). Plus passes a Scalar
/// that is never collected; the kernel is the same, so results are bit-identical. (sub has no alpha in TorchSharp, so
/// a - b is safe.)</summary>
public static class HeldScalars
{
    public static readonly Scalar One = 1;

    public static Tensor Plus(this Tensor a, Tensor b) => a.add(b, One);

    public static Tensor Plus(this Tensor a, Scalar b) => a.add(b, One);
}
