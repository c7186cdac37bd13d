// Gradients, Hessian-vector products and the top Hessian eigenvalue of a scalar function of a model's parameters,
// through TorchSharp autograd. H·v is the gradient of ⟨∇f, v⟩ (double backward: the first gradient keeps its graph),
// exact up to rounding, in the model's dtype (use float64 for the landscape constants). The top eigenvalue by magnitude
// comes from power iteration; it is a local smoothness estimate, not a global bound.
using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Theory;

public static class Curvature
{
    public static Tensor[] Parameters(Qwen3ForCausalLM model) => model.parameters().ToArray();

    /// <summary>The parameters as one flat double vector.</summary>
    public static double[] Get(Qwen3ForCausalLM model)
    {
        using var scope = NewDisposeScope();
        return cat(Parameters(model).Select(p => p.detach().flatten().to(ScalarType.Float64)).ToArray())
            .data<double>()
            .ToArray();
    }

    /// <summary>Writes a flat vector back into the parameters (in their dtype).</summary>
    public static void Set(Qwen3ForCausalLM model, double[] theta)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        long o = 0;
        foreach (var p in Parameters(model))
        {
            long n = p.numel();
            if (o + n > theta.Length)
                throw new ArgumentException($"parameter vector has {theta.Length} entries, the model needs more");
            p.copy_(tensor(theta.AsSpan((int)o, (int)n).ToArray(), p.shape).to(p.dtype));
            o += n;
        }
        if (o != theta.Length)
            throw new ArgumentException($"parameter vector has {theta.Length} entries, the model has {o}");
    }

    /// <summary>f(θ) and ∇f(θ) as a flat vector.</summary>
    public static (double Value, double[] Grad) Gradient(Qwen3ForCausalLM model, Func<Tensor> f)
    {
        using var scope = NewDisposeScope();
        var ps = Parameters(model);
        var y = f();
        var g = autograd.grad([y], ps, allow_unused: true);
        return (y.to(ScalarType.Float64).item<double>(), Flat(ps, g));
    }

    /// <summary>∇²f(θ)·v by double backward.</summary>
    public static double[] HessianVector(Qwen3ForCausalLM model, Func<Tensor> f, double[] v)
    {
        using var scope = NewDisposeScope();
        var ps = Parameters(model);
        var g = autograd.grad([f()], ps, retain_graph: true, create_graph: true, allow_unused: true);
        Tensor dot = zeros(1, dtype: ps[0].dtype);
        long o = 0;
        for (int i = 0; i < ps.Length; i++)
        {
            long n = ps[i].numel();
            if (g[i] is not null && g[i].Handle != IntPtr.Zero)
                dot = dot.Plus((g[i] * tensor(v.AsSpan((int)o, (int)n).ToArray(), ps[i].shape).to(ps[i].dtype)).sum());
            o += n;
        }
        var hv = autograd.grad([dot.sum()], ps, allow_unused: true);
        return Flat(ps, hv);
    }

    /// <summary>The eigenvalue of ∇²f(θ) largest in magnitude, by power iteration (Rayleigh quotient of the last
    /// iterate).</summary>
    public static (double Value, int Iterations) TopHessianEigenvalue(
        Qwen3ForCausalLM model,
        Func<Tensor> f,
        int maxIterations = 30,
        double tol = 1e-4,
        int seed = 0,
        double[]? start = null
    )
    {
        var rng = new Random(seed);
        var v = start is not null
            ? (double[])start.Clone()
            : Enumerable.Range(0, Get(model).Length).Select(_ => rng.NextDouble() - 0.5).ToArray();
        Normalize(v);
        double lam = 0;
        for (int it = 1; it <= maxIterations; it++)
        {
            var hv = HessianVector(model, f, v);
            double next = Dot(v, hv);
            double n = Math.Sqrt(Dot(hv, hv));
            if (n == 0)
                return (0, it);
            for (int k = 0; k < v.Length; k++)
                v[k] = hv[k] / n;
            if (it > 1 && Math.Abs(next - lam) <= tol * Math.Abs(next))
                return (next, it);
            lam = next;
        }
        return (lam, maxIterations);
    }

    /// <summary>Gradients of the parameters (as autograd.grad returns them; unused ones undefined) as one flat
    /// vector.</summary>
    internal static double[] Flat(Tensor[] ps, IList<Tensor> g) =>
        cat(
                ps.Select(
                        (p, i) =>
                            g[i] is null || g[i].Handle == IntPtr.Zero
                                ? zeros(p.numel(), dtype: ScalarType.Float64)
                                : g[i].flatten().to(ScalarType.Float64)
                    )
                    .ToArray()
            )
            .data<double>()
            .ToArray();

    public static double Dot(double[] a, double[] b)
    {
        double s = 0;
        for (int k = 0; k < a.Length; k++)
            s += a[k] * b[k];
        return s;
    }

    public static double Norm(double[] a) => Math.Sqrt(Dot(a, a));

    /// <summary>cos(a, b); 0 when either is zero.</summary>
    public static double Cosine(double[] a, double[] b)
    {
        double na = Norm(a),
            nb = Norm(b);
        return na == 0 || nb == 0 ? 0 : Dot(a, b) / (na * nb);
    }

    public static double[] Sum(IReadOnlyList<double[]> vs)
    {
        var r = new double[vs.Count > 0 ? vs[0].Length : 0];
        foreach (var v in vs)
            for (int k = 0; k < r.Length; k++)
                r[k] += v[k];
        return r;
    }

    static void Normalize(double[] a)
    {
        var n = Norm(a);
        for (int k = 0; k < a.Length; k++)
            a[k] /= n;
    }

    public static double[] Axpy(double[] x, double[] y, double a)
    {
        var r = (double[])x.Clone();
        for (int k = 0; k < r.Length; k++)
            r[k] += a * y[k];
        return r;
    }
}
