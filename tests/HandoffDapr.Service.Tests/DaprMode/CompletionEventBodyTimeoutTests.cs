using HandoffDapr.Service.Api;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// A completion event whose body came too slowly (Kestrel's minimum data rate, a 408) says nothing about the event: in
/// Dapr mode daprd is asked to deliver it again (RETRY), not told to dead-letter it (DROP) as a malformed one is. The
/// fake sidecar delivers over the test server, which has no data rate, so the handler is called with a body that fails
/// as Kestrel's does.
/// </summary>
public sealed class CompletionEventBodyTimeoutTests
{
    [Fact]
    public async Task Event_body_that_arrives_too_slowly_is_answered_retry_in_dapr_mode_not_dropped()
    {
        var answer = await AcceptAsync(HostingMode.Dapr, new StallingBody(StatusCodes.Status408RequestTimeout));

        Assert.Same(DaprEventReply.Retry, answer);
    }

    [Fact]
    public async Task Event_body_with_broken_framing_is_still_dropped_in_dapr_mode()
    {
        // The retry is for the time-out alone: a body that can never be read is dead-lettered.
        var answer = await AcceptAsync(HostingMode.Dapr, new StallingBody(StatusCodes.Status400BadRequest));

        Assert.Same(DaprEventReply.Drop, answer);
    }

    /// <summary>
    /// Embedded mode has no daprd to redeliver the event: its sender is told to send it again with the 408 problem
    /// (docs/api.md), not given the reply meant for daprd.
    /// </summary>
    [Fact]
    public async Task Event_body_that_arrives_too_slowly_is_a_408_problem_in_embedded_mode()
    {
        var answer = Assert.IsType<ProblemHttpResult>(await AcceptAsync(HostingMode.Embedded, new StallingBody(StatusCodes.Status408RequestTimeout)));

        Assert.Equal(StatusCodes.Status408RequestTimeout, answer.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/body-too-slow", answer.ProblemDetails.Type);
    }

    private static Task<IResult> AcceptAsync(HostingMode mode, Stream body)
    {
        var context = new DefaultHttpContext();
        context.Request.Method = HttpMethods.Post;
        context.Request.ContentType = "application/cloudevents+json";
        context.Request.ContentLength = 1000;
        context.Request.Body = body;
        // The owner is never reached: the body is refused before any run is read.
        var services = new HandoffServices(null!, Options.Create(new HandoffOptions()), NullLogger<HandoffServices>.Instance);
        return CompletionEventEndpoints.AcceptAsync(context.Request, services, new HostingContext(mode), CancellationToken.None);
    }

    /// <summary>Gives a few bytes, then fails as Kestrel's body does (its data rate, or its framing checks).</summary>
    private sealed class StallingBody(int status) : AsyncReadOnlyStream
    {
        private bool sent;

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (!sent)
            {
                sent = true;
                "{\"specversion\""u8.CopyTo(buffer.Span);
                return ValueTask.FromResult(14);
            }

            throw new BadHttpRequestException("The body did not arrive in time.", status);
        }
    }
}
