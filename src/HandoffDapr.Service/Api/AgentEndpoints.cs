using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Serialization;
using HandoffDapr.Service.Hosting;
using Microsoft.AspNetCore.Http.HttpResults;

namespace HandoffDapr.Service.Api;

/// <summary><c>/runs/{runId}/agents/{agentId}/…</c>: stop an agent, or send it a follow-up instruction.</summary>
public static class AgentEndpoints
{
    public static IEndpointRouteBuilder MapAgentEndpoints(this IEndpointRouteBuilder app)
    {
        var agents = app.MapGroup("/runs/{runId}/agents/{agentId}").WithTags("Agents");
        agents.MapPost("/stop", StopAsync).WithName("StopAgent")
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict)
            .ProducesProblem(StatusCodes.Status502BadGateway)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable)
            .ProducesProblem(StatusCodes.Status504GatewayTimeout);
        agents.MapPost("/followup", FollowupAsync).WithName("AgentFollowup")
            .AcceptsJson<FollowupRequest>()
            .ProducesProblem(StatusCodes.Status400BadRequest)
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status409Conflict)
            .ProducesProblem(StatusCodes.Status408RequestTimeout)
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
            .ProducesProblem(StatusCodes.Status415UnsupportedMediaType)
            .ProducesProblem(StatusCodes.Status502BadGateway)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable)
            .ProducesProblem(StatusCodes.Status504GatewayTimeout);
        return app;
    }

    public static async Task<Results<Ok<CodingAgentState>, ProblemHttpResult>> StopAsync(
        string runId, string agentId, [AsParameters] HandoffServices services, CancellationToken cancellationToken)
    {
        if (BadIds(runId, agentId, out var id) is { } problem)
        {
            return problem;
        }

        return await RunAsync(id, services, () => services.Owner.StopAgentAsync(id, agentId, cancellationToken));
    }

    public static async Task<Results<Ok<CodingAgentState>, ProblemHttpResult>> FollowupAsync(
        string runId, string agentId, HttpRequest request, [AsParameters] HandoffServices services, CancellationToken cancellationToken)
    {
        if (BadIds(runId, agentId, out var id) is { } problem)
        {
            return problem;
        }

        var (body, unreadable) = await JsonBody.ReadAsync(request, ServiceJsonContext.Default.FollowupRequest, services.Options, cancellationToken);
        if (unreadable is not null)
        {
            return unreadable;
        }

        // Text of nothing visible (controls, zero-width characters, spaces) would reach the agent as an empty instruction.
        // Each cause told alone, as the trigger's instruction is: a text too long has its visible character.
        if (!PrintableText.HasVisible(body!.Text))
        {
            return Problems.InvalidRequest("text is required and must have a visible character.");
        }

        if (body.Text!.Length > services.Options.Value.MaxInstructionLength)
        {
            return Problems.InvalidRequest($"text may be at most {services.Options.Value.MaxInstructionLength} characters.");
        }

        return await RunAsync(id, services, () => services.Owner.AddFollowupAsync(id, new AgentFollowup(agentId, body.Text.Trim()), cancellationToken));
    }

    /// <summary>
    /// A run id that is no whole number is the caller's mistake (400, as on the run's own routes); an agent id of a shape
    /// no provider gives is no agent of the run (404, as for one the run does not have).
    /// </summary>
    private static ProblemHttpResult? BadIds(string runId, string agentId, out long id) =>
        !RunIds.TryParse(runId, out id) ? Problems.InvalidRunId()
        : !AgentIds.IsValid(agentId) ? Problems.UnknownAgent()
        : null;

    private static async Task<Results<Ok<CodingAgentState>, ProblemHttpResult>> RunAsync(
        long runId, HandoffServices services, Func<Task<AgentCommandOutcome>> command)
    {
        AgentCommandOutcome outcome;
        try
        {
            outcome = await command();
        }
        catch (RunOwnerUnavailableException exception)
        {
            return HandoffEndpoints.OwnerUnavailable(services.Logger, runId, exception);
        }

        return outcome.Status switch
        {
            AgentCommandStatus.Done => TypedResults.Ok(outcome.Agent!),
            AgentCommandStatus.ProviderFailed => Problems.ProviderFailed(outcome.FailureType!),
            AgentCommandStatus.OutcomeUnknown => Problems.ProviderOutcomeUnknown(outcome.FailureType!),
            AgentCommandStatus.UnknownIntegration => Problems.AgentIntegrationRemoved(),
            _ => Problems.UnknownAgent(),
        };
    }
}

/// <summary>Body of <c>POST /runs/{runId}/agents/{agentId}/followup</c>.</summary>
public sealed record FollowupRequest(string? Text);
