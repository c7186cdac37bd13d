// The coupling of a GRPO step with the SFT loss, measured as it happens: cos(∇J, −∇L_SFT) on the step's rollouts and an
// expert batch drawn from (seed, step), both gradient norms, and the spectral concentration (Spectral.cs) of the
// per-example gradients that sum exactly to the two (one per expert example, one per rollout sequence, each with the
// batch's normalisers; each rollout row runs alone, so the pieces sum to the per-row forward's gradient, which the
// update's shared-prompt forward equals to rounding). It attaches to a GrpoTrainer through its BeforeUpdate hook, so
// Training does not depend on Theory. ∇J is −∇ of the GRPO loss, so cos(∇J, −∇L_SFT) = cos(∇loss_rl, ∇L_SFT);
// negative: the RL step raises L_SFT.
using Workbook.Model;
using Workbook.Training;
using static TorchSharp.torch;

namespace Workbook.Theory;

public static class GradientAlignment
{
    /// <summary>Attaches the diagnostic when the trainer is a GRPO trainer whose options ask for it
    /// (gradient_alignment_steps &gt; 0): what `run` and `train` do with every trainer they create.</summary>
    public static void AttachIfAsked(ITrainer trainer, TrainOptions options)
    {
        if (trainer is GrpoTrainer g && options is GrpoOptions { GradientAlignmentSteps: > 0 } o)
            Attach(g, o);
    }

    /// <summary>Attaches the diagnostic to a trainer (every gradient_alignment_steps steps, from its
    /// options).</summary>
    public static void Attach(GrpoTrainer trainer, GrpoOptions o)
    {
        trainer.BeforeUpdate = (batch, step) =>
        {
            var rng = new Random(unchecked((int)(o.Seed * 31 + step)));
            var expert = Enumerable
                .Range(0, o.GradientAlignmentExamples)
                .Select(_ => trainer.Codec.Sft(trainer.Prompts[rng.Next(trainer.Prompts.Count)]))
                .ToList();
            return Measure(trainer.Policy, expert, trainer.Codec.PadId, batch, (int)step);
        };
    }

    public static Dictionary<string, double> Measure(
        Qwen3ForCausalLM model,
        IReadOnlyList<SftSequence> expert,
        int padId,
        GrpoBatch batch,
        int seed
    )
    {
        var (sftParts, rlParts) = Pieces(model, expert, padId, batch); // autograd.grad: .grad untouched
        var s = Spectral.Estimate(sftParts, rlParts, seed: seed);
        return new()
        {
            ["diagnostics/cos_rl_sft"] = s.Cos,
            ["diagnostics/sft_grad_norm"] = Curvature.Norm(Curvature.Sum(sftParts)),
            ["diagnostics/rl_grad_norm"] = Curvature.Norm(Curvature.Sum(rlParts)),
            ["diagnostics/spectral_top_fraction"] = s.TopFraction,
            ["diagnostics/spectral_epsilon"] = s.Epsilon,
            ["diagnostics/cos_bound"] = s.CosBound,
        };
    }

    /// <summary>Per-example gradients that sum exactly to ∇L_SFT (token mean over the expert batch) and to ∇(GRPO
    /// loss).</summary>
    public static (List<double[]> Sft, List<double[]> Rl) Pieces(
        Qwen3ForCausalLM model,
        IReadOnlyList<SftSequence> expert,
        int padId,
        GrpoBatch batch
    )
    {
        long sftTokens = Losses.MakeSftBatch(expert, padId, 4096, packing: false).Tokens;
        var sft = new List<double[]>();
        var rl = new List<double[]>();
        foreach (var e in expert)
        {
            var one = Losses.MakeSftBatch([e], padId, 4096, packing: false);
            sft.Add(
                Curvature.Gradient(model, () => Losses.SftNll(model, one).NllSum.Over(Math.Max(1, sftTokens))).Grad
            );
        }
        for (long j = 0; j < batch.Sequences; j++)
            rl.Add(Curvature.Gradient(model, () => batch.Loss(model, new GrpoBatch.Accumulator(), [j])).Grad);
        return (sft, rl);
    }

    /// <summary>The flattened parameter gradients of two losses.</summary>
    public static (double[] A, double[] B) Pair(Qwen3ForCausalLM model, Func<Tensor> lossA, Func<Tensor> lossB) =>
        (Curvature.Gradient(model, lossA).Grad, Curvature.Gradient(model, lossB).Grad);
}
