using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;

namespace HandoffDapr.Core.Serialization;

/// <summary>
/// snake_case JSON for everything the service stores or says: the HTTP API's bodies (docs/api.md; the types listed
/// below), the SQLite rows and the actor state use the same shapes. Source-generated, so no reflection on the hot path.
/// </summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    PropertyNameCaseInsensitive = true,
    NumberHandling = JsonNumberHandling.Strict,
    AllowTrailingCommas = false,
    MaxDepth = 32)]
[JsonSerializable(typeof(JsonElement))]
[JsonSerializable(typeof(RunSnapshot))]
[JsonSerializable(typeof(RunHandoffState))]
[JsonSerializable(typeof(HandoffResult))]
[JsonSerializable(typeof(CodingAgentState))]
[JsonSerializable(typeof(Dictionary<string, CodingAgentState>))]
[JsonSerializable(typeof(List<RepositoryLaunch>))]
[JsonSerializable(typeof(List<TimelineEntry>))]
[JsonSerializable(typeof(DateTimeOffset))]
[JsonSerializable(typeof(HandoffTrigger))]
[JsonSerializable(typeof(TriggerOutcome))]
[JsonSerializable(typeof(CompletionOutcome))]
[JsonSerializable(typeof(PollSchedule))]
[JsonSerializable(typeof(AgentCommandOutcome))]
[JsonSerializable(typeof(AgentReportStatus))]
[JsonSerializable(typeof(AgentFollowup))]
[JsonSerializable(typeof(AgentReport))]
[JsonSerializable(typeof(Providers.ProviderAgent))]
[JsonSerializable(typeof(LaunchRoundAnswers))]
[JsonSerializable(typeof(PollAnswers))]
[JsonSerializable(typeof(PollVerdict))]
[JsonSerializable(typeof(AgentCommandSent))]
[JsonSerializable(typeof(List<string>))]
[JsonSerializable(typeof(DeletedRun))]
public sealed partial class HandoffJsonContext : JsonSerializerContext
{
    /// <summary>
    /// Options for serializers the service does not call itself (actor state and calls, DaprClient):
    /// snake_case, this context first, reflection only for the SDK's own envelope types.
    /// </summary>
    public static JsonSerializerOptions CreateOptions(params IJsonTypeInfoResolver[] more) => new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        PropertyNameCaseInsensitive = true,
        TypeInfoResolver = JsonTypeInfoResolver.Combine([Default, .. more, new DefaultJsonTypeInfoResolver()]),
    };
}

/// <summary>
/// What clients send, read with the same shapes as <see cref="HandoffJsonContext"/> but stricter: a property named twice
/// (in any case) is refused rather than read last-wins, so nothing in front of the service can read a different run or
/// group than it does. What the service stored itself is read with <see cref="HandoffJsonContext.Default"/>, unchecked.
/// </summary>
public static class InboundJson
{
    public static JsonTypeInfo<RunSnapshot> RunSnapshot { get; } =
        new HandoffJsonContext(new JsonSerializerOptions(HandoffJsonContext.Default.Options) { AllowDuplicateProperties = false }).RunSnapshot;
}
