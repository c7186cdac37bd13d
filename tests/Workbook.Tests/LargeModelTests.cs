using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Tests;

/// <summary>Builds the real Qwen3-0.6B shape (random init, bf16 to halve the memory) and runs one forward pass.
/// Slow (~10-20 s): tagged so a fast local run can skip it with --filter Category!=Large; CI runs it.</summary>
[Trait("Category", "Large")]
public class LargeModelTests
{
    [Fact]
    public void Qwen3_0_6B_builds_with_596M_parameters_and_runs_a_forward_pass()
    {
        using var m = new Qwen3ForCausalLM(Qwen3Config.Qwen3_0_6B, ScalarType.BFloat16, seed: 1);
        Assert.Equal(596_049_920L, m.ParameterCount());
        using var _ = no_grad();
        using var x = tensor(new long[] { 151644, 872, 198, 13048, 151645 }, [1, 5]);
        using var logits = m.Forward(x);
        Assert.Equal(new long[] { 1, 5, 151936 }, logits.shape);
        Assert.True(logits.isfinite().all().item<bool>());
    }
}
