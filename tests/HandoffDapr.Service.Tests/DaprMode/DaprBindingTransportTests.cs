using Grpc.Core;
using HandoffDapr.Core.Providers;
using HandoffDapr.Service.Transport;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// daprd reports every failed output binding as Internal with the same error code; the message decides whether the
/// provider may have received the request. Messages as daprd builds them (pkg/messages ErrInvokeOutputBinding,
/// gobreaker's errors, Go's url.Error for a timed-out request).
/// </summary>
public sealed class DaprBindingTransportTests
{
    [Theory]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: circuit breaker is open", TransportFailureKind.CircuitOpen, false)]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: too many requests", TransportFailureKind.CircuitOpen, false)]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: context deadline exceeded", TransportFailureKind.Timeout, true)]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Post \"https://api.cursor.com/v0/agents\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)", TransportFailureKind.Timeout, true)]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Post \"https://api.cursor.com/v0/agents\": connection reset by peer", TransportFailureKind.Network, true)]
    [InlineData(StatusCode.Unavailable, "connection refused", TransportFailureKind.Network, false)]
    [InlineData(StatusCode.DeadlineExceeded, "", TransportFailureKind.Timeout, true)]
    public void Binding_error_is_classified_by_whether_the_provider_may_have_received_the_request(StatusCode code, string detail, TransportFailureKind kind, bool requestSent)
    {
        var classified = DaprBindingTransport.Classify(new RpcException(new Status(code, detail)));

        Assert.Equal((kind, requestSent), classified);
    }

    [Fact]
    public void Open_breaker_costs_no_attempt_and_needs_no_reconcile()
    {
        var (kind, requestSent) = DaprBindingTransport.Classify(new RpcException(new Status(StatusCode.Internal, "error invoking output binding coding-agent-cursor: circuit breaker is open")));

        var failure = ProviderFailureClassifier.FromTransport(new ProviderTransportException(kind, requestSent));

        Assert.False(failure.RequestSent);
        Assert.False(failure.OutcomeUnknown);
        Assert.True(failure.Retryable);
    }
}
