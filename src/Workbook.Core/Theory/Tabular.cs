// Exact checks of the paper's statements on finite prompt/response sets (double precision). Each returns both sides and
// their difference, so a notebook can show them and a test can assert them.
//  Theorem 3.1 (SFT then RL): with p_SFT = p_data and p_RL ∝ p_SFT·e^{r/β},
//    L_SFT(p_RL) − L_SFT(p_SFT) = C1(β) = E_x[log Z_β(x) − E_{p_data} r/β] = E_x KL(p_data‖p_RL) ≥ 0,
//    zero iff r is constant on the expert support; C1 → E_x Var_{p_data}[r] / (2β²) as β → ∞ and
//    ~ E_x[max_supp r − E_{p_data} r]/β as β → 0.
//  RL then SFT: for p* ∝ π_ref·e^{r/β} and any p, J(p) − J(p*) = −β KL(p‖p*) + β[KL(p‖π_ref) − KL(p*‖π_ref)];
// the reward drop when SFT moves p* to p_data; and the counterexample (r ≡ 0) showing a KL band alone forces no drop.
// (The identities are from notes/paper.md: Theorem 3.1 is the paper's; the exact reward identity is a derivation of
// ours.)
namespace Workbook.Theory;

/// <summary>A finite problem: prompts with weights q(x); for each prompt, K responses with p_data and
/// rewards.</summary>
public sealed record TabularProblem(double[] Q, double[][] PData, double[][] Reward)
{
    public int Prompts => Q.Length;

    public static TabularProblem Random(int prompts, int responses, int seed, double zeroProbability = 0.0)
    {
        var r = new Random(seed);
        double[] Simplex(int k)
        {
            var v = Enumerable.Range(0, k).Select(_ => -Math.Log(1 - r.NextDouble())).ToArray();
            var s = v.Sum();
            return v.Select(x => x / s).ToArray();
        }
        var pd = Enumerable
            .Range(0, prompts)
            .Select(_ =>
            {
                var p = Simplex(responses);
                if (zeroProbability > 0)
                {
                    for (int i = 0; i < p.Length; i++)
                        if (r.NextDouble() < zeroProbability)
                            p[i] = 0;
                    if (p.Sum() == 0)
                        p[0] = 1;
                    var s = p.Sum();
                    p = p.Select(x => x / s).ToArray();
                }
                return p;
            })
            .ToArray();
        return new TabularProblem(
            Simplex(prompts),
            pd,
            Enumerable
                .Range(0, prompts)
                .Select(_ => Enumerable.Range(0, responses).Select(_ => r.NextDouble()).ToArray())
                .ToArray()
        );
    }
}

public sealed record Theorem31Result(
    double LossIncrease,
    double C1,
    double KlDataToRl,
    double C1MinusIncrease,
    double KlMinusIncrease
);

public sealed record RewardIdentityResult(double Lhs, double Rhs, double Difference);

public static class Tabular
{
    /// <summary>p ∝ base·e^{r/β} per prompt (log-sum-exp stabilised).</summary>
    public static double[][] Tilt(double[][] basePolicy, double[][] reward, double beta) =>
        basePolicy
            .Select(
                (b, x) =>
                {
                    double mx = Enumerable.Range(0, b.Length).Where(i => b[i] > 0).Max(i => reward[x][i] / beta);
                    var w = b.Select((p, i) => p > 0 ? p * Math.Exp(reward[x][i] / beta - mx) : 0).ToArray();
                    var z = w.Sum();
                    return w.Select(v => v / z).ToArray();
                }
            )
            .ToArray();

    /// <summary>L_SFT(p) = E_x E_{y~p_data}[−log p(y|x)] (nats per response).</summary>
    public static double SftLoss(TabularProblem t, double[][] p) =>
        Enumerable
            .Range(0, t.Prompts)
            .Sum(x =>
                t.Q[x]
                * Enumerable
                    .Range(0, p[x].Length)
                    .Where(i => t.PData[x][i] > 0)
                    .Sum(i => -t.PData[x][i] * Math.Log(p[x][i]))
            );

    public static double Kl(double[] p, double[] q) =>
        Enumerable.Range(0, p.Length).Where(i => p[i] > 0).Sum(i => p[i] * Math.Log(p[i] / q[i]));

    public static double ExpectedKl(double[] weights, double[][] p, double[][] q) =>
        Enumerable.Range(0, weights.Length).Sum(x => weights[x] * Kl(p[x], q[x]));

    /// <summary>J(p) = E_x E_{y~p}[r].</summary>
    public static double Reward(double[] weights, double[][] p, double[][] r) =>
        Enumerable
            .Range(0, weights.Length)
            .Sum(x => weights[x] * Enumerable.Range(0, p[x].Length).Sum(i => p[x][i] * r[x][i]));

    /// <summary>C1(β) = E_x[log Z_β(x) − E_{p_data} r/β], Z_β(x) = E_{y~p_SFT} e^{r/β}, with p_SFT = p_data.</summary>
    public static double C1(TabularProblem t, double beta) =>
        Enumerable
            .Range(0, t.Prompts)
            .Sum(x =>
            {
                var p = t.PData[x];
                var r = t.Reward[x];
                var sup = Enumerable.Range(0, p.Length).Where(i => p[i] > 0).ToArray();
                double mx = sup.Max(i => r[i] / beta);
                double logZ = mx + Math.Log(sup.Sum(i => p[i] * Math.Exp(r[i] / beta - mx)));
                return t.Q[x] * (logZ - sup.Sum(i => p[i] * r[i]) / beta);
            });

    public static Theorem31Result Theorem31(TabularProblem t, double beta)
    {
        var pRl = Tilt(t.PData, t.Reward, beta);
        double inc = SftLoss(t, pRl) - SftLoss(t, t.PData);
        double c1 = C1(t, beta),
            kl = ExpectedKl(t.Q, t.PData, pRl);
        return new Theorem31Result(inc, c1, kl, c1 - inc, kl - inc);
    }

    /// <summary>E_x Var_{p_data}[r] / (2β²): the large-β asymptote of C1.</summary>
    public static double C1LargeBeta(TabularProblem t, double beta) =>
        Enumerable
            .Range(0, t.Prompts)
            .Sum(x =>
            {
                var p = t.PData[x];
                var r = t.Reward[x];
                double m = Enumerable.Range(0, p.Length).Sum(i => p[i] * r[i]);
                return t.Q[x] * Enumerable.Range(0, p.Length).Sum(i => p[i] * (r[i] - m) * (r[i] - m));
            }) / (2 * beta * beta);

    /// <summary>E_x[max over the support of r − E_{p_data} r] / β: the small-β behaviour of C1.</summary>
    public static double C1SmallBeta(TabularProblem t, double beta) =>
        Enumerable
            .Range(0, t.Prompts)
            .Sum(x =>
            {
                var p = t.PData[x];
                var r = t.Reward[x];
                var sup = Enumerable.Range(0, p.Length).Where(i => p[i] > 0);
                return t.Q[x] * (sup.Max(i => r[i]) - sup.Sum(i => p[i] * r[i]));
            }) / beta;

    /// <summary>J(p) − J(p*) against −β KL(p‖p*) + β[KL(p‖π_ref) − KL(p*‖π_ref)], with p* ∝ π_ref·e^{r/β}.</summary>
    public static RewardIdentityResult RewardIdentity(
        double[] q,
        double[][] p,
        double[][] piRef,
        double[][] r,
        double beta
    )
    {
        var star = Tilt(piRef, r, beta);
        double lhs = Reward(q, p, r) - Reward(q, star, r);
        double rhs = -beta * ExpectedKl(q, p, star) + beta * (ExpectedKl(q, p, piRef) - ExpectedKl(q, star, piRef));
        return new RewardIdentityResult(lhs, rhs, lhs - rhs);
    }

    /// <summary>The reward lost when SFT moves the RL optimum p* ∝ π_ref·e^{r/β} to p_data: J(p*) −
    /// J(p_data).</summary>
    public static double RewardDropAfterSft(TabularProblem t, double[][] piRef, double beta) =>
        Reward(t.Q, Tilt(piRef, t.Reward, beta), t.Reward) - Reward(t.Q, t.PData, t.Reward);

    /// <summary>One prompt, two answers, r ≡ 0, p_RL = π_ref = (½, ½), p_SFT = (¾, ¼): KL(p_SFT‖p_RL) ≈ 0.130812 lies
    /// in the band [0.1, 0.2], yet the reward does not change — a KL band alone does not force a strict drop.</summary>
    public static (double Kl, double RewardChange) Counterexample()
    {
        double[] rl = [0.5, 0.5],
            sft = [0.75, 0.25],
            r = [0, 0];
        return (Kl(sft, rl), sft.Zip(r).Sum(a => a.First * a.Second) - rl.Zip(r).Sum(a => a.First * a.Second));
    }
}
