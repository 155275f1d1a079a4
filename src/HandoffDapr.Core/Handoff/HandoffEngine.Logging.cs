using HandoffDapr.Core.Model;
using Microsoft.Extensions.Logging;

namespace HandoffDapr.Core.Handoff;

/// <summary>The engine's log lines (source-generated), event ids 1001–1099: never a whole request or state.</summary>
public sealed partial class HandoffEngine
{
    [LoggerMessage(EventId = 1001, EventName = "HandoffUnknownRun", Level = LogLevel.Information, Message = "Run {RunId} is unknown to group {GroupId}: nothing launched")]
    private partial void LogUnknownRun(long runId, long groupId);

    [LoggerMessage(EventId = 1002, EventName = "HandoffGroupMismatch", Level = LogLevel.Warning, Message = "Run {RunId} was asked for by group {GroupId}, which it does not belong to")]
    private partial void LogGroupMismatch(long runId, long groupId);

    [LoggerMessage(EventId = 1003, EventName = "HandoffLaunched", Level = LogLevel.Information, Message = "Run {RunId}: agent {AgentId} launched for {Repository} (attempt {Attempt})")]
    private partial void LogLaunched(long runId, string repository, string agentId, int attempt);

    [LoggerMessage(EventId = 1033, EventName = "LaunchBranchRenamed", Level = LogLevel.Warning, Message = "Run {RunId}: the agent {AgentId} for {Repository} works on branch {ShownBranch}, not {RequestedBranch} as asked: a launch whose answer is lost cannot be found by its branch at this provider, and would be launched again")]
    private partial void LogLaunchBranchRenamed(long runId, string repository, string agentId, string requestedBranch, string shownBranch);

    [LoggerMessage(EventId = 1004, EventName = "HandoffRetryScheduled", Level = LogLevel.Warning, Message = "Run {RunId}: launch for {Repository} failed ({FailureType}) after {Attempt} attempt(s); retry at {RetryAt}")]
    private partial void LogRetryScheduled(long runId, string repository, string failureType, int attempt, string retryAt);

    /// <summary>
    /// <see cref="LogRetryScheduled"/>'s line (the same fields) for a launch stored <see cref="LaunchPhase.OutcomeUnknown"/>:
    /// "failed" would be untrue of it (a lost answer, a call cut off by shutdown's grace), and its next attempt looks for the
    /// agent first. A name of its own: the generator refuses one name for two lines (SYSLIB1025).
    /// </summary>
    [LoggerMessage(EventId = 1025, EventName = "HandoffOutcomeUnknown", Level = LogLevel.Warning,
        Message = "Run {RunId}: launch for {Repository} has an unknown outcome ({FailureType}) after {Attempt} attempt(s): an agent it may have made is looked for at the provider before any new attempt, at {RetryAt}")]
    private partial void LogOutcomeUnknownRetryScheduled(long runId, string repository, string failureType, int attempt, string retryAt);

    /// <summary>
    /// A time as a log field: ISO 8601, in the message and in the JSON line's state alike (a DateTimeOffset field is
    /// written there in the invariant culture's "12/04/2026 19:46:44 +00:00", which no log query reads as a time).
    /// </summary>
    private static string LogTime(DateTimeOffset time) => time.ToString("O", System.Globalization.CultureInfo.InvariantCulture);

    [LoggerMessage(EventId = 1005, EventName = "HandoffLaunchFailed", Level = LogLevel.Warning, Message = "Run {RunId}: launch for {Repository} failed for good ({FailureType}) after {Attempt} attempt(s)")]
    private partial void LogLaunchFailed(long runId, string repository, string failureType, int attempt);

    /// <summary><paramref name="foundBy"/>: one of the <c>FoundBy…</c> texts below.</summary>
    [LoggerMessage(EventId = 1006, EventName = "HandoffReconciled", Level = LogLevel.Information, Message = "Run {RunId}: found agent {AgentId} for {Repository} {FoundBy}; adopted it instead of launching again")]
    private partial void LogReconciled(long runId, string repository, string agentId, string foundBy);

    private const string FoundByLookup = "by a lookup at the provider";
    private const string FoundByWebhook = "in a webhook's report";
    private const string FoundByLateAnswer = "in a launch's answer that came after its deadline";
    private const string FoundByLateLookup = "by a lookup at the provider that answered after its deadline";

    [LoggerMessage(EventId = 1007, EventName = "HandoffUnknownIntegration", Level = LogLevel.Warning, Message = "Run {RunId} asks for integration {IntegrationId}, which is not configured")]
    private partial void LogUnknownIntegration(long runId, long integrationId);

    [LoggerMessage(EventId = 1009, EventName = "AgentTimedOut", Level = LogLevel.Warning, Message = "Run {RunId}: agent {AgentId} still unfinished after {MaxAge}; marked failed (timed_out)")]
    private partial void LogAgentTimedOut(long runId, string agentId, TimeSpan maxAge);

    [LoggerMessage(EventId = 1028, EventName = "GivenUpAgentStillWorking", Level = LogLevel.Warning,
        Message = "Run {RunId}: agent {AgentId} for {Repository} was given up on (timed out or stopped) but the provider shows it at work; stopping it again")]
    private partial void LogGivenUpStillWorking(long runId, string agentId, string repository);

    /// <summary>
    /// A refusal, or a stop sent that no answer confirmed (a time-out, a 408, 500, 502 or 504): either way it is sent again.
    /// </summary>
    [LoggerMessage(EventId = 1029, EventName = "AgentStopNotTaken", Level = LogLevel.Warning,
        Message = "Run {RunId}: the provider refused the stop of agent {AgentId}, given up on, or did not say whether it carried it out ({FailureType}); sent again at the next read that shows it at work")]
    private partial void LogStopNotTaken(long runId, string agentId, string failureType);

    [LoggerMessage(EventId = 1008, EventName = "AgentStatusChanged", Level = LogLevel.Information, Message = "Run {RunId}: agent {AgentId} for {Repository} moved from {From} to {To}")]
    private partial void LogAgentStatusChanged(long runId, string agentId, string? repository, string from, string to);

    [LoggerMessage(EventId = 1024, EventName = "AgentPullRequestLearnt", Level = LogLevel.Information,
        Message = "Run {RunId}: agent {AgentId} opened pull request {PullRequestUrl} for {Repository}")]
    private partial void LogPullRequestLearnt(long runId, string agentId, string pullRequestUrl, string repository);

    [LoggerMessage(EventId = 1013, EventName = "PromptOverCap", Level = LogLevel.Warning,
        Message = "Run {RunId}: {Repository} not launched: its prompt without any analysis is {Length} characters, over the integration's cap of {Cap}")]
    private partial void LogPromptOverCap(long runId, string repository, int length, int cap);

    // The exception's type only: its message may carry a provider's text.
    [LoggerMessage(EventId = 1012, EventName = "ProviderClientFaulted", Level = LogLevel.Error,
        Message = "Run {RunId}: the provider client failed unexpectedly during {Operation} ({ExceptionType}); the outcome of a launch, stop or follow-up is then unknown, a read failed")]
    private partial void LogProviderFaulted(long runId, string operation, string exceptionType);

    [LoggerMessage(EventId = 1014, EventName = "LaunchRoundDropped", Level = LogLevel.Error,
        Message = "Run {RunId}: the answers of a launch round do not fit the run's state and were not applied; its launches are reconciled at their deadline")]
    private partial void LogRoundDropped(long runId);

    /// <summary>A poll's, apart from a launch round's: nothing about launches is left to reconcile, its agents are read again.</summary>
    [LoggerMessage(EventId = 1023, EventName = "PollRoundDropped", Level = LogLevel.Warning,
        Message = "Run {RunId}: the reports of a status poll do not fit the run's state and were not applied; its agents are read again at the next poll")]
    private partial void LogPollDropped(long runId);

    [LoggerMessage(EventId = 1015, EventName = "LaunchAnswerLate", Level = LogLevel.Information,
        Message = "Run {RunId}: the answer to attempt {Attempt} for {Repository} came after the launch moved on; nothing to apply")]
    private partial void LogLateAnswer(long runId, string repository, int attempt);

    [LoggerMessage(EventId = 1018, EventName = "AgentOfAnotherLaunch", Level = LogLevel.Warning,
        Message = "Run {RunId}: the provider answered the launch for {Repository} with agent {AgentId}, which is another launch's of the run, for {OtherRepository} (followed by it, or on its branch); taken as an unreadable answer")]
    private partial void LogAgentOfAnotherLaunch(long runId, string repository, string agentId, string otherRepository);

    [LoggerMessage(EventId = 1016, EventName = "AgentNotFollowed", Level = LogLevel.Warning,
        Message = "Run {RunId}: a late answer names agent {AgentId} for {Repository}, which already has another agent; it is not followed and may need stopping")]
    private partial void LogAgentNotFollowed(long runId, string repository, string agentId);

    [LoggerMessage(EventId = 1026, EventName = "AgentCommandTaken", Level = LogLevel.Information,
        Message = "Run {RunId}: the provider took the {Command} for agent {AgentId} on {Repository}")]
    private partial void LogCommandTaken(long runId, string command, string agentId, string repository);

    [LoggerMessage(EventId = 1027, EventName = "AgentCommandRefused", Level = LogLevel.Warning,
        Message = "Run {RunId}: the provider did not carry out the {Command} for agent {AgentId} on {Repository} ({FailureType}); nothing recorded")]
    private partial void LogCommandRefused(long runId, string command, string agentId, string repository, string failureType);

    [LoggerMessage(EventId = 1017, EventName = "AgentCommandNotRecorded", Level = LogLevel.Warning,
        Message = "Run {RunId}: the provider accepted the {Command} for agent {AgentId}, but it could not be recorded ({ExceptionType}); answered as done")]
    private partial void LogCommandNotRecorded(long runId, string command, string agentId, string exceptionType);

    [LoggerMessage(EventId = 1030, EventName = "AgentCommandRunDeleted", Level = LogLevel.Warning,
        Message = "Run {RunId}: the provider accepted the {Command} for agent {AgentId}, but retention deleted the run before it was recorded; answered as done")]
    private partial void LogCommandRunDeleted(long runId, string command, string agentId);

    [LoggerMessage(EventId = 1021, EventName = "AgentCommandOutcomeUnknown", Level = LogLevel.Warning,
        Message = "Run {RunId}: the {Command} for agent {AgentId} may have reached the provider, and no answer said whether it was carried out ({FailureType}); answered as unknown")]
    private partial void LogCommandOutcomeUnknown(long runId, string command, string agentId, string failureType);

    [LoggerMessage(EventId = 1022, EventName = "AgentCommandOutcomeNotRecorded", Level = LogLevel.Warning,
        Message = "Run {RunId}: the {Command} for agent {AgentId}, whose outcome is unknown, could not be recorded ({ExceptionType}); the agent may not be watched again")]
    private partial void LogCommandOutcomeNotRecorded(long runId, string command, string agentId, string exceptionType);

    [LoggerMessage(EventId = 1019, EventName = "AgentReportOfAnotherRepository", Level = LogLevel.Warning,
        Message = "Run {RunId}: a {Source} report about agent {AgentId} names the repository {ReportedRepository}, not {Repository} it was launched on; not applied")]
    private partial void LogReportOfAnotherRepository(long runId, string source, string agentId, string reportedRepository, string repository);

    [LoggerMessage(EventId = 1031, EventName = "AgentFinishToConfirm", Level = LogLevel.Information,
        Message = "Run {RunId}: agent {AgentId} for {Repository} reported finished by webhook without its pull request; read now to confirm")]
    private partial void LogFinishToConfirm(long runId, string agentId, string? repository);

    [LoggerMessage(EventId = 1032, EventName = "AgentFinishTakenUnconfirmed", Level = LogLevel.Warning,
        Message = "Run {RunId}: agent {AgentId} for {Repository} reported finished by webhook could not be read until its time-out; completed without a pull request")]
    private partial void LogFinishTakenUnconfirmed(long runId, string agentId, string? repository);

    [LoggerMessage(EventId = 1020, EventName = "PullRequestOfAnotherRepository", Level = LogLevel.Warning,
        Message = "Run {RunId}: agent {AgentId} reported a pull request that is not one of {Repository}; not recorded as its pull request")]
    private partial void LogPullRequestOfAnotherRepository(long runId, string agentId, string repository);

    [LoggerMessage(EventId = 1011, EventName = "HandoffRepositoryNotLaunched", Level = LogLevel.Warning, Message = "Run {RunId}: {Repository} not launched ({FailureType}): {Reason}")]
    private partial void LogRepositoryNotLaunched(long runId, string repository, string failureType, string reason);

    [LoggerMessage(EventId = 1010, EventName = "AutomationTargetMismatch", Level = LogLevel.Warning,
        Message = "Run {RunId} asks for {Target} through integration {IntegrationId}, which is {Provider}: not handed off automatically")]
    private partial void LogTargetMismatch(long runId, long integrationId, string target, string provider);
}
