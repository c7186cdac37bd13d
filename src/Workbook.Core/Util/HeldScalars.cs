using TorchSharp;
using static TorchSharp.torch;

namespace Workbook;

/// <summary>TorchSharp's <c>a + b</c> is <c>a.add(b, alpha)</c> with alpha an implicit Scalar 1: once its handle is
/// read nothing holds it, and a GC on another thread (seeds train as threads) may finalize it while the native call
/// still reads it ("Expected false to be true" in toFloat; seen once with 5 seeds in parallel). Plus passes a Scalar
/// that is never collected; the kernel is the same, so results are bit-identical. (sub has no alpha in TorchSharp, so
/// a - b is safe.) TorchSharp's operators with a number (t / n, 0.5 * t, 1 - t) make an implicit Scalar of it the same
/// way; Over, Times and OneMinus hold theirs until the call returns. ScalarSafetyTests finds every call of that kind.
/// </summary>
public static class HeldScalars
{
    public static readonly Scalar One = 1;

    public static Tensor Plus(this Tensor a, Tensor b) => a.add(b, One);

    public static Tensor Plus(this Tensor a, Scalar b) => a.add(b, One);

    /// <summary>a / b, as TorchSharp's a / b for a number b.</summary>
    public static Tensor Over(this Tensor a, long b)
    {
        using Scalar s = b;
        return a.div(s);
    }

    /// <summary>a / b, as TorchSharp's a / b for a number b.</summary>
    public static Tensor Over(this Tensor a, double b)
    {
        using Scalar s = b;
        return a.div(s);
    }

    /// <summary>a − b, as TorchSharp's a - b for a number b.</summary>
    public static Tensor Minus(this Tensor a, double b)
    {
        using Scalar s = b;
        return a.sub(s);
    }

    /// <summary>a · b, as TorchSharp's a * b (and b * a) for a number b.</summary>
    public static Tensor Times(this Tensor a, double b)
    {
        using Scalar s = b;
        return a.mul(s);
    }

    /// <summary>1 − a, as TorchSharp's 1 - a (−a + 1).</summary>
    public static Tensor OneMinus(this Tensor a) => a.negative().add(One, One);
}
