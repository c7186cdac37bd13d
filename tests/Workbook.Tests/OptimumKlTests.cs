using Workbook.Theory;

namespace Workbook.Tests;

public class OptimumKlTests
{
    [Theory]
    [InlineData(0.25)]
    [InlineData(1.0)]
    [InlineData(4.0)]
    public void Kl_at_the_optimum_matches_the_enumerated_tilt(double beta)
    {
        // five responses, two of them rewarded: p* ∝ p·e^{r/β}; KL(p*‖p) by enumeration
        double[] p = [0.1, 0.3, 0.05, 0.35, 0.2];
        double[] r = [1, 0, 1, 0, 0];
        var w = p.Select((x, i) => x * Math.Exp(r[i] / beta)).ToArray();
        double z = w.Sum();
        double kl = w.Select(x => x / z).Select((q, i) => q * Math.Log(q / p[i])).Sum();
        double success = p.Where((_, i) => r[i] == 1).Sum();
        Assert.Equal(kl, C1Predictor.KlAtOptimum(success, beta), 10);
        Assert.Equal(0, C1Predictor.KlAtOptimum(0, beta), 12); // nothing to gain: p* = p
        Assert.Equal(0, C1Predictor.KlAtOptimum(1, beta), 10);
    }
}
