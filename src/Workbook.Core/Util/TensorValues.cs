using static TorchSharp.torch;

namespace Workbook;

public static class TensorValues
{
    /// <summary>A one-element tensor of any dtype as a double.</summary>
    public static double Value(this Tensor t)
    {
        using var d = t.to(ScalarType.Float64);
        return d.item<double>();
    }
}
