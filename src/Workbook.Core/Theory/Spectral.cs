// Spectral concentration of per-example gradients, the measurable side of the misalignment lemma (our reconstruction,
// notes/paper.md §3.6 [R]). With per-example gradients g_1..g_n (SFT examples and RL sequences) and F = Σ g_i g_iᵀ:
//  • power iteration, matrix-free (v ← Σ g_i ⟨g_i, v⟩), gives the top eigenpair (λ_1, u_1) of F without forming d×d;
//  • the share of F's energy on u_1 is λ_1 / tr F, tr F = Σ‖g_i‖² (the proxy 1 − ε of the notes);
// • for the two batch gradients G_S, G_R: if ⟨u,G⟩² ≥ (1 − ε)‖G‖² for both, then |cos(G_S, G_R)| ≥ 1 − 2ε, for ANY unit
// u (|α_1β_1| ≥ (1−ε)‖G_S‖‖G_R‖ and Cauchy–Schwarz bounds the rest by ε‖G_S‖‖G_R‖). With u = u_1 the lemma is checkable
//    on every logged step; it is informative only when ε < ½.
namespace Workbook.Theory;

public sealed record SpectralEstimate(
    double TopEigenvalue,
    double Trace,
    double TopFraction,
    double SftShareOnTop,
    double RlShareOnTop,
    double Epsilon,
    double CosBound,
    double Cos,
    int Iterations
);

public static class Spectral
{
    /// <summary>Top eigenpair of the PSD operator v ↦ Σ g_i ⟨g_i, v⟩ by power iteration from a seeded start.</summary>
    public static (double Value, double[] Vector, int Iterations) TopEigen(
        IReadOnlyList<double[]> vectors,
        int maxIterations = 100,
        double tol = 1e-10,
        int seed = 0
    )
    {
        if (vectors.Count == 0)
            throw new ArgumentException("no vectors");
        int d = vectors[0].Length;
        var rng = new Random(seed);
        var v = new double[d];
        for (int k = 0; k < d; k++)
            v[k] = rng.NextDouble() - 0.5;
        // start inside the span (the top eigenvector lives there): one application removes the null-space part
        v = Apply(vectors, v);
        double norm = Curvature.Norm(v);
        if (norm == 0)
            return (0, v, 0);
        Scale(v, 1 / norm);
        double lam = 0;
        int it;
        for (it = 1; it <= maxIterations; it++)
        {
            var w = Apply(vectors, v);
            double next = Curvature.Dot(v, w),
                n = Curvature.Norm(w);
            if (n == 0)
                return (0, v, it);
            Scale(w, 1 / n);
            v = w;
            if (Math.Abs(next - lam) <= tol * Math.Abs(next))
            {
                lam = next;
                break;
            }
            lam = next;
        }
        return (lam, v, Math.Min(it, maxIterations));
    }

    /// <summary>The concentration statistics of the batch gradients G_S = Σ sft_i and G_R = Σ rl_j on F's top
    /// eigenvector.</summary>
    public static SpectralEstimate Estimate(
        IReadOnlyList<double[]> sft,
        IReadOnlyList<double[]> rl,
        int maxIterations = 100,
        int seed = 0
    )
    {
        var all = sft.Concat(rl).ToList();
        var (lam, u, its) = TopEigen(all, maxIterations, seed: seed);
        double trace = all.Sum(g => Curvature.Dot(g, g));
        var gs = Curvature.Sum(sft);
        var gr = Curvature.Sum(rl);
        double Share(double[] g)
        {
            double n2 = Curvature.Dot(g, g);
            return n2 == 0 ? 0 : Math.Pow(Curvature.Dot(u, g), 2) / n2;
        }
        double fs = Share(gs),
            fr = Share(gr),
            eps = 1 - Math.Min(fs, fr);
        return new SpectralEstimate(
            lam,
            trace,
            trace == 0 ? 0 : lam / trace,
            fs,
            fr,
            eps,
            1 - 2 * eps,
            Curvature.Cosine(gs, gr),
            its
        );
    }

    static double[] Apply(IReadOnlyList<double[]> g, double[] v)
    {
        var r = new double[v.Length];
        foreach (var gi in g)
        {
            double c = Curvature.Dot(gi, v);
            for (int k = 0; k < r.Length; k++)
                r[k] += c * gi[k];
        }
        return r;
    }

    static void Scale(double[] a, double s)
    {
        for (int k = 0; k < a.Length; k++)
            a[k] *= s;
    }
}
