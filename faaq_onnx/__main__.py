from faaq_onnx.cli import main

main()
