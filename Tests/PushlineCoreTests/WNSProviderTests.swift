import Testing
@testable import PushlineCore
